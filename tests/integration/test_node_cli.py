"""``p2psip node`` and ``p2psip call`` as a user runs them: real processes on loopback.

Nodes bootstrap from the overlay address another one printed; calls go by AoR (TLS with the
callee's key checked, SRTP, ICE) and the audio is checked in the recorded WAV files; the
console is driven through a pipe; SIGINT stops a caller and a callee cleanly (recordings
readable, records withdrawn); errors are one line with a distinct exit status.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from p2psip.media.audio import WavFileSource, dominant_frequency

ROOT = Path(__file__).resolve().parents[2]
DOMAIN = "p2p.test"
pytestmark = pytest.mark.timeout(60)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "p2psip.cli.main", *args]


def p2psip(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run a command to its end (stdin is not a terminal)."""
    return subprocess.run(
        _argv(*args),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_env(),
        cwd=ROOT,
    )


def aor(name: str) -> str:
    """A unique AoR: other test runs on this machine may browse the same Bonjour loopback."""
    return f"sip:{name}-{secrets.token_hex(3)}@{DOMAIN}"


def start_node(factory: Callable[..., Any], name: str, *args: str) -> tuple[Any, str]:
    """A ``p2psip node`` process (stdin /dev/null) once ready; (process, overlay HOST:PORT)."""
    proc = factory(_argv("node", *args), name=name, env=_env(), cwd=ROOT)
    match = proc.wait_for_log(r"^overlay (?:udp:(\S+)|none)", timeout=20)
    proc.wait_for_log(r"^ready", timeout=5)
    return proc, match.group(1)


def wait_until(check: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def wav_size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def tone_of(path: Path) -> tuple[float, float]:
    """(dominant frequency, seconds) of a recording, skipping its first 0.2 s."""
    with WavFileSource(path) as wav:
        pcm = wav.read(wav.file_frames)
        rate = wav.file_rate
    return dominant_frequency(pcm[rate // 5 :], rate), len(pcm) / rate


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_call_by_aor_between_processes(process_factory: Callable[..., Any], tmp_path: Path) -> None:
    alice, bob = aor("alice"), aor("bob")
    rec = tmp_path / "alice.wav"
    a, a_overlay = start_node(
        process_factory, "alice", "--aor", alice, "--auto-answer", "--tone", "600",
        "--record", str(rec),
    )  # fmt: skip
    key = re.search(r"\(key (sha256:\S+),", a.log_text())
    assert key and a_overlay.startswith("127.0.0.1:")
    assert re.search(r"^contact sip:alice-\w+@127\.0\.0\.1:\d+;transport=tls$", a.log_text(), re.M)
    # Bob joins through Alice's printed overlay address; the caller through Bob's.
    _, b_overlay = start_node(process_factory, "bob", "--aor", bob, "--bootstrap", a_overlay)
    heard = tmp_path / "caller.wav"
    result = p2psip(
        "call", alice, "--bootstrap", b_overlay, "--tone", "1000", "--duration", "2",
        "--record", str(heard), "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["srtp"] is True and report["srtp_suite"]
    assert report["tls_verified"] is True and report["verified_key"] == key.group(1)
    assert report["contact"].endswith(";transport=tls") and report["transport"] == "ice"
    assert report["codec"] == "PCMU/8000"
    assert report["packets_sent"] > 60 and report["packets_received"] > 60
    assert report["loss_percent"] < 5 and report["resolve_ms"] >= 0 and report["setup_ms"] > 0
    assert report["ended_by"] == "local" and 1.9 <= report["duration_s"] <= 3
    a.wait_for_log(r"^#1 ended: hangup", timeout=10)
    frequency, seconds = tone_of(rec)  # the callee's recording: the caller's tone
    assert abs(frequency - 1000) < 10 and seconds > 1.5
    frequency, seconds = tone_of(heard)  # and the other way
    assert abs(frequency - 600) < 10 and seconds > 1.5


def test_console_through_a_pipe(process_factory: Callable[..., Any], tmp_path: Path) -> None:
    carol, dave = aor("carol"), aor("dave")
    rec = tmp_path / "carol.wav"
    # --json-events: every stdout line is one JSON object, the first says where to bootstrap
    c = process_factory(
        _argv("node", "--aor", carol, "--auto-answer", "--record", str(rec), "--json-events"),
        name="carol",
        env=_env(),
        cwd=ROOT,
    )
    started = json.loads(c.wait_for_log(r'^\{"event": "started".*$', timeout=20).group(0))
    assert started["aor"] == carol and started["overlay"].startswith("udp:127.0.0.1:")
    overlay = started["overlay"].removeprefix("udp:")
    script = "\n".join(
        [
            f"call {carol}",
            "hold",  # waits until the call is up
            "sleep 0.5",
            "status",
            "unhold",
            "dtmf 123#",
            "sleep 1",
            "hangup",
            "frobnicate",
            "quit",
            "",
        ]
    )
    dave_run = subprocess.run(
        _argv("node", "--aor", dave, "--bootstrap", overlay, "--tone", "700"),
        input=script,
        capture_output=True,
        text=True,
        timeout=40,
        env=_env(),
        cwd=ROOT,
    )
    out = dave_run.stdout
    assert dave_run.returncode == 0, dave_run.stderr + out
    assert "Traceback" not in dave_run.stderr
    for line in (
        f"#1 calling {carol}",
        "#1 connected: codec PCMU/8000, SRTP on",
        "TLS key verified",
        "#1 held",
        "#1 resumed",
        "#1 sent DTMF 123#",
        "#1 ended: hangup",
        "error: unknown command 'frobnicate'",
        "stopped (quit)",
    ):
        assert line in out, out
    status = next(x for x in out.splitlines() if x.startswith("#1 outgoing"))
    assert "confirmed" in status and "srtp=on" in status
    c.wait_for_log(r'"event": "call_ended"', timeout=10)
    events = [json.loads(x) for x in c.log_text().splitlines() if x.startswith("{")]
    kinds = [e["event"] for e in events]
    assert kinds.index("incoming_call") < kinds.index("established") < kinds.index("remote_held")
    incoming = next(e for e in events if e["event"] == "incoming_call")
    assert incoming["caller_verified"] is True and incoming["caller_key"].startswith("sha256:")
    assert kinds.index("remote_held") < kinds.index("remote_resumed") < kinds.index("call_ended")
    ended = next(e for e in events if e["event"] == "call_ended")
    assert ended["summary"]["dtmf_received"] == 4  # RFC 4733 events of 1, 2, 3, #
    assert ended["summary"]["srtp"] is True and ended["recording"] == str(rec)
    frequency, _ = tone_of(rec)
    assert abs(frequency - 700) < 10


def test_sigint_stops_caller_and_callee_cleanly(
    process_factory: Callable[..., Any], tmp_path: Path
) -> None:
    erin, frank = aor("erin"), aor("frank")
    rec = tmp_path / "erin.wav"
    e, e_overlay = start_node(
        process_factory, "erin", "--aor", erin, "--auto-answer", "--tone", "600",
        "--record", str(rec),
    )  # fmt: skip
    _, overlay = start_node(process_factory, "frank", "--aor", frank, "--bootstrap", e_overlay)

    def caller(*extra: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            _argv(
                "call", erin, "--bootstrap", overlay, "--tone", "1000", "--duration", "30", *extra
            ),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(),
            cwd=ROOT,
        )

    # 1. Ctrl-C of the caller: hung up, its recording readable, exit 130
    heard = tmp_path / "heard.wav"
    first = caller("--record", str(heard))
    try:
        wait_until(lambda: wav_size(heard) > 44 + 2 * 8000, 20, "the caller's recording")
        first.send_signal(signal.SIGINT)
        out, err = first.communicate(timeout=15)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 130, err
    assert "Traceback" not in err and "interrupted" in err
    assert "ended by us: interrupted" in out
    frequency, seconds = tone_of(heard)
    assert abs(frequency - 600) < 10 and seconds > 0.5
    e.wait_for_log(r"^#1 ended", timeout=10)

    # 2. SIGINT of the callee during a call: the call ends, its recording is readable, its
    #    record is withdrawn, exit 0
    second = caller("--json")
    rec2 = tmp_path / "erin-2.wav"
    try:
        wait_until(lambda: wav_size(rec2) > 44 + 2 * 16000, 20, "the callee's recording")
        os.kill(e.pid, signal.SIGINT)
        assert e.popen.wait(15) == 0
        out, err = second.communicate(timeout=15)
    finally:
        if second.poll() is None:
            second.kill()
    assert second.returncode == 0, err
    report = json.loads(out)
    assert report["ended_by"] == "remote" and report["packets_received"] > 10
    assert "stopped (signal 2)" in e.log_text() and "Traceback" not in e.log_text()
    frequency, seconds = tone_of(rec2)
    assert abs(frequency - 1000) < 10 and seconds > 0.5
    lookup = p2psip("lookup", erin, "--bootstrap", overlay)
    assert lookup.returncode == 2
    assert "not found" in one_line_error(lookup)


def test_console_answers_and_call_errors(process_factory: Callable[..., Any]) -> None:
    gina = aor("gina")
    # a node that answers from its console (no --auto-answer): its calls ring until a command
    g = subprocess.Popen(
        _argv("node", "--aor", gina, "--no-bonjour"),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=_env(),
        cwd=ROOT,
    )

    def read_until(text: str) -> str:
        assert g.stdout is not None
        for line in g.stdout:
            if text in line:
                return line
        pytest.fail(f"the node exited before printing {text!r}")

    def caller(*extra: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            _argv("call", gina, "--bootstrap", overlay, "--duration", "0.5", *extra),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(),
            cwd=ROOT,
        )

    def command(text: str) -> None:
        assert g.stdin is not None
        g.stdin.write(text + "\n")
        g.stdin.flush()

    try:
        overlay = read_until("overlay udp:").split("udp:", 1)[1].strip()
        read_until("ready")
        missing = p2psip("call", aor("nobody"), "--bootstrap", overlay)
        assert missing.returncode == 2
        assert "not found" in one_line_error(missing)
        for answer, status in (("reject", "603 Decline"), ("busy", "486 Busy Here")):
            call = caller()
            read_until("incoming call from")
            command(answer)
            _, err = call.communicate(timeout=20)
            assert call.returncode == 4, err
            assert "Traceback" not in err and len(err.strip().splitlines()) == 1
            assert status in err, err
        call = caller("--json")
        assert "type 'answer 3' or 'reject 3'" in read_until("#3 incoming call from")
        command("answer")
        out, err = call.communicate(timeout=20)
        assert call.returncode == 0, err
        assert json.loads(out)["srtp"] is True
        # Ctrl-C of a caller while the callee rings: CANCEL, exit 130
        call = caller()
        read_until("#4 incoming call from")
        call.send_signal(signal.SIGINT)
        _, err = call.communicate(timeout=20)
        assert call.returncode == 130 and "interrupted" in err and "Traceback" not in err
        assert "487" in read_until("#4 ended")
        command("quit")
        assert g.wait(15) == 0
    finally:
        if g.poll() is None:
            g.kill()
            g.wait()
    no_locator = p2psip("call", "sip:bob@p2p.test")
    assert no_locator.returncode == 1 and "--bootstrap" in one_line_error(no_locator)
    bad_tone = p2psip("call", "sip:bob@127.0.0.1:5999", "--tone", "9000")
    assert bad_tone.returncode == 1 and "--tone" in one_line_error(bad_tone)
    dead = p2psip("node", "--aor", aor("hank"), "--bootstrap", "127.0.0.1:9")
    assert dead.returncode == 1 and "no overlay node answered" in one_line_error(dead)


def test_direct_uri_against_p2psip_uas(
    process_factory: Callable[..., Any], free_port: Callable[..., int]
) -> None:
    port = free_port("udp")
    uas = process_factory(
        _argv("uas", "--listen", f"127.0.0.1:{port}", "--transport", "udp"),
        name="uas",
        env=_env(),
        cwd=ROOT,
    )
    uas.wait_for_udp_port(port)
    result = p2psip("call", f"sip:carol@127.0.0.1:{port}", "--duration", "0.5", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["srtp"] is False and report["tls_verified"] is False  # a legacy peer
    assert report["codec"] == "PCMU/8000" and report["transport"] == "udp"
    assert report["packets_sent"] > 10 and report["contact"] == f"sip:carol@127.0.0.1:{port}"


def test_lan_only_nodes_call_each_other(
    process_factory: Callable[..., Any], tmp_path: Path
) -> None:
    lena, mike = aor("lena"), aor("mike")
    rec = tmp_path / "lena.wav"
    lena_proc, overlay = start_node(
        process_factory, "lena", "--aor", lena, "--lan-only", "--auto-answer",
        "--record", str(rec),
    )  # fmt: skip
    assert overlay is None and "overlay none (LAN only: Bonjour)" in lena_proc.log_text()
    script = f"call {lena}\ndtmf 5\nsleep 1.2\nhangup\nquit\n"
    mike_run = subprocess.run(
        _argv("node", "--aor", mike, "--lan-only", "--tone", "1000"),
        input=script,
        capture_output=True,
        text=True,
        timeout=30,
        env=_env(),
        cwd=ROOT,
    )
    assert mike_run.returncode == 0, mike_run.stderr
    assert "#1 connected: codec PCMU/8000, SRTP on" in mike_run.stdout, mike_run.stdout
    assert "TLS key verified" in mike_run.stdout  # the key came in the Bonjour TXT record
    lena_proc.wait_for_log(r"^#1 ended", timeout=10)
    frequency, seconds = tone_of(rec)
    assert abs(frequency - 1000) < 10 and seconds > 0.8
    # and a one-shot caller in LAN-only mode
    result = p2psip("call", lena, "--lan-only", "--duration", "0.5", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["srtp"] is True
    # SIGTERM (stdin is /dev/null: the node ran on after the end of its input)
    assert lena_proc.stop() == 0
    assert "stopped (signal 15)" in lena_proc.log_text()


async def test_wrong_key_in_a_lan_record_is_refused(process_factory: Callable[..., Any]) -> None:
    """Mallory announces an AoR on the LAN with her key and the TLS contact of a real node:
    the caller sees a certificate bound to another key and refuses before any INVITE."""
    import asyncio
    import dataclasses

    from p2psip.locator.aio.bonjour import BonjourLocator
    from p2psip.locator.static import contact_from_uri
    from p2psip.overlay.identity import Identity

    real, forged = aor("nora"), aor("mallory")
    node, _ = await asyncio.to_thread(
        start_node, process_factory, "nora", "--aor", real, "--lan-only", "--auto-answer"
    )
    tls_uri = re.search(r"^contact (\S+;transport=tls)$", node.log_text(), re.M).group(1)  # type: ignore[union-attr]
    mallory = Identity.generate()
    contact = dataclasses.replace(
        contact_from_uri(tls_uri),
        key_fingerprint=mallory.fingerprint,
        public_key=mallory.public_key_bytes,
    )
    publisher = await BonjourLocator.start(interfaces=["127.0.0.1"], probe=False)
    try:
        await publisher.publish(forged, [contact])
        result = await asyncio.to_thread(p2psip, "call", forged, "--lan-only", "--duration", "1")
    finally:
        await publisher.close()
    assert result.returncode == 5, result.stdout + result.stderr
    assert "verification failed" in one_line_error(result)
    assert "incoming call" not in node.log_text()  # nothing reached the node
