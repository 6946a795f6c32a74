"""``p2psip demo`` as the README runs it: Alice calls Bob by AoR in a small local overlay, a
tone crosses both ways, the figures print, exit 0."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def demo(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run(
        [sys.executable, "-m", "p2psip.cli.main", "demo", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        cwd=ROOT,
    )


def figure(out: str, name: str) -> str:
    match = re.search(rf"^{name} +(.+)$", out, re.MULTILINE)
    assert match, f"no {name!r} line in:\n{out}"
    return match.group(1)


def test_demo_call_by_aor_with_figures() -> None:
    result = demo("--quiet")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "INVITE sip:" not in out and "] bob:" not in out  # --quiet: figures only
    assert re.fullmatch(
        r"[\d.]+ ms \(dht: sip:bob@127\.0\.0\.1:\d+;transport=tls\)", figure(out, "resolve")
    )
    assert re.match(r"[\d.]+ ms", figure(out, "setup"))
    assert re.match(r"[\d.]+ ms", figure(out, "call up"))
    assert figure(out, "codec") == "PCMU/8000 over ice"
    assert figure(out, "SRTP").startswith("on (AES_CM_128_HMAC_SHA1_")
    assert re.fullmatch(r"verified sha256:[a-z2-7]+", figure(out, "TLS key"))
    packets = [int(n) for n in re.findall(r"\d+", figure(out, "packets"))]
    assert len(packets) == 4 and min(packets) > 40  # 1.5 s of 20 ms packets each way
    assert re.fullmatch(r"alice [\d.]+ %, bob [\d.]+ %", figure(out, "loss"))
    assert re.fullmatch(r"alice [\d.]+ ms, bob [\d.]+ ms", figure(out, "jitter"))
    heard = [float(x) for x in re.findall(r"hears ([\d.]+) Hz", figure(out, "received"))]
    assert len(heard) == 2 and abs(heard[0] - 1000) < 10 and abs(heard[1] - 600) < 10
    seconds = float(re.fullmatch(r"OK in ([\d.]+) s", figure(out, "result")).group(1))  # type: ignore[union-attr]
    assert seconds < 10
    assert "Traceback" not in result.stderr


def test_demo_shows_the_sip_trace_and_events() -> None:
    result = demo("--duration", "0.5", "--overlay-nodes", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "overlay of 2 DHT nodes" in out
    assert re.search(r"alice >>> tls:127\.0\.0\.1:\d+\nINVITE sip:bob@", out)
    assert re.search(r"alice <<< tls:127\.0\.0\.1:\d+\nSIP/2\.0 200 OK", out)
    assert "a=crypto:1 AES_CM_128_HMAC_SHA1_80" in out and "a=candidate:" in out
    assert "bob: incoming call from <sip:alice@demo.p2psip.test>" in out
    assert "alice: call confirmed" in out and "\nBYE sip:bob@" in out
    assert "result     OK" in out


def test_demo_bad_option_is_one_line() -> None:
    result = demo("--host", "192.0.2.1")
    assert result.returncode == 1
    assert result.stderr.strip() == "p2psip demo: --host must be a loopback address, not 192.0.2.1"
