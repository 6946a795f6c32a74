"""An SRTP G.711 call across a network-namespace pair with ``tc netem`` (5 % loss, 20 ms delay
with 40 ms of jitter) in each direction.

Two namespaces joined by a veth pair with addresses in 198.18.0.0/15 (the benchmarking range,
RFC 2544); one ``tests/media_peer.py`` process in each (``ip netns exec``), the SDP relayed
through their stdin/stdout. The received recording must stay continuous (concealment fills the
losses: no silent hole longer than ~60 ms) at 1 kHz, and each side's statistics must report
netem's loss. Needs root and ``ip``/``tc`` (Debian iproute2): skipped otherwise, failed under
``CI=true``. The namespaces get unique names and are deleted in a finalizer.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from p2psip.media.audio import WavFileSource, dominant_frequency
from tests.conftest import require_binary

ROOT = Path(__file__).resolve().parents[2]
SECONDS = 10.0


def _need_root() -> None:
    if os.geteuid() != 0:
        message = "network namespaces need root"
        if os.environ.get("CI") == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


def _sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=20)


def _kernel_has_netem(ip: str, tc: str, tag: str) -> bool:
    """Whether ``tc ... netem`` works here (minimal VM kernels lack ``sch_netem``)."""
    ns = f"p2pmq{tag}"
    _sh(ip, "netns", "add", ns)
    try:
        probe = subprocess.run(
            [tc, "-n", ns, "qdisc", "add", "dev", "lo", "root", "netem", "loss", "5%"],
            capture_output=True,
            timeout=20,
        )
        return probe.returncode == 0
    finally:
        subprocess.run([ip, "netns", "del", ns], capture_output=True, timeout=20)


@pytest.fixture
def netns_pair(tmp_path: Path) -> Iterator[tuple[str, str, str, str, str]]:
    """(namespace A, address A, namespace B, address B, impairment) - 5 % loss and 20 +- 40 ms
    delay in each direction, by ``tc netem`` on a veth pair, or by ``tests/netem_relay.py``
    between two TUN devices when the kernel has no netem."""
    _need_root()
    ip = require_binary("ip")
    tc = require_binary("tc")
    tag = f"{os.getpid() % 100000}{random.randrange(100)}"
    ns_a, ns_b = f"p2pma{tag}", f"p2pmb{tag}"
    dev_a, dev_b = f"vma{tag}", f"vmb{tag}"
    subnet = random.randrange(0, 256)
    addr_a, addr_b = f"198.19.{subnet}.1", f"198.19.{subnet}.2"
    created: list[str] = []
    relay: subprocess.Popen[str] | None = None
    try:
        netem = _kernel_has_netem(ip, tc, tag)
        for ns in (ns_a, ns_b):
            _sh(ip, "netns", "add", ns)
            created.append(ns)
        if netem:
            impairment = "tc netem"
            _sh(ip, "link", "add", dev_a, "type", "veth", "peer", "name", dev_b)
        else:
            impairment = "tests/netem_relay.py (kernel without sch_netem)"
            relay = subprocess.Popen(
                [sys.executable, str(ROOT / "tests" / "netem_relay.py"),
                 "--dev-a", dev_a, "--dev-b", dev_b, "--loss", "5", "--delay", "20",
                 "--jitter", "40", "--seed", str(random.randrange(1000)), "--seconds", "60"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )  # fmt: skip
            assert relay.stdout is not None
            if relay.stdout.readline().strip() != "ready":
                relay.wait(5)
                raise subprocess.CalledProcessError(
                    1, "netem_relay", b"", relay.stderr.read().encode() if relay.stderr else b""
                )
        for ns, dev, addr, peer in ((ns_a, dev_a, addr_a, addr_b), (ns_b, dev_b, addr_b, addr_a)):
            _sh(ip, "link", "set", dev, "netns", ns)
            if netem:
                _sh(ip, "-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
            else:  # a point-to-point TUN link
                _sh(ip, "-n", ns, "addr", "add", addr, "peer", peer, "dev", dev)
            _sh(ip, "-n", ns, "link", "set", "lo", "up")
            _sh(ip, "-n", ns, "link", "set", dev, "up")
            if netem:
                _sh(tc, "-n", ns, "qdisc", "add", "dev", dev, "root", "netem",
                    "loss", "5%", "delay", "20ms", "40ms")  # fmt: skip
    except subprocess.CalledProcessError as exc:
        _teardown(ip, created, relay)
        stderr = exc.stderr.decode(errors="replace").strip() if exc.stderr else ""
        message = f"cannot set up the namespaces: {stderr}"
        if os.environ.get("CI") == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    try:
        yield ns_a, addr_a, ns_b, addr_b, impairment
    finally:
        _teardown(ip, created, relay)


def _teardown(ip: str, namespaces: list[str], relay: subprocess.Popen[str] | None) -> None:
    for ns in namespaces:  # deleting a namespace deletes its end of the link
        subprocess.run([ip, "netns", "del", ns], capture_output=True, timeout=20)
    if relay is not None and relay.poll() is None:
        relay.terminate()
        try:
            relay.wait(5)
        except subprocess.TimeoutExpired:
            relay.kill()
            relay.wait()


def _peer(ns: str, role: str, address: str, record: Path | None = None) -> subprocess.Popen[str]:
    script = str(ROOT / "tests" / "media_peer.py")
    argv = [
        require_binary("ip"), "netns", "exec", ns, sys.executable, script,
        "--role", role, "--address", address, "--seconds", str(SECONDS),
    ]  # fmt: skip
    if record is not None:
        argv += ["--record", str(record)]
    return subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _line(proc: subprocess.Popen[str]) -> dict[str, object]:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.wait(5)
        assert proc.stderr is not None
        pytest.fail(f"peer exited ({proc.returncode}): {proc.stderr.read()[-2000:]}")
    return json.loads(line)  # type: ignore[no-any-return]


def _longest_hole_ms(pcm: np.ndarray, rate: int) -> float:
    """Longest run of 10 ms blocks 40 dB below the median level, inside the audible part."""
    block = rate // 100
    n = len(pcm) // block
    energy = np.sqrt(np.mean(pcm[: n * block].astype(np.float64).reshape(n, block) ** 2, axis=1))
    loud = np.flatnonzero(energy > 32768 * 0.01)
    active = energy[loud[0] : loud[-1] + 1]
    quiet = active < np.median(active) * 0.01
    longest = run = 0
    for q in quiet:
        run = run + 1 if q else 0
        longest = max(longest, run)
    return longest * 10.0


def test_call_across_netem_stays_continuous_and_reports_the_loss(
    netns_pair: tuple[str, str, str, str, str], tmp_path: Path
) -> None:
    ns_a, addr_a, ns_b, addr_b, impairment = netns_pair
    record = tmp_path / "received.wav"
    answerer = _peer(ns_b, "answer", addr_b, record)
    offerer = _peer(ns_a, "offer", addr_a)
    try:
        assert offerer.stdin is not None and answerer.stdin is not None
        offer = _line(offerer)
        answerer.stdin.write(json.dumps(offer) + "\n")
        answerer.stdin.flush()
        answer = _line(answerer)
        offerer.stdin.write(json.dumps(answer) + "\n")
        offerer.stdin.flush()
        assert f"c=IN IP4 {addr_a}" in str(offer["sdp"])  # only our namespaces' addresses
        stats_a = _line(offerer)["stats"]
        stats_b = _line(answerer)["stats"]
        assert offerer.wait(15) == 0 and answerer.wait(15) == 0
    finally:
        for proc in (offerer, answerer):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert isinstance(stats_a, dict) and isinstance(stats_b, dict)
    print(f"impairment: {impairment}")
    for name, stats in (("A", stats_a), ("B", stats_b)):
        keys = ("loss_percent", "jitter_ms", "rtt_ms", "concealed_frames", "late_packets",
                "jitter_buffer_target_ms", "remote_loss_percent")  # fmt: skip
        print(name, {k: stats[k] for k in keys})
    for stats in (stats_a, stats_b):
        assert stats["transport"] == "ice" and stats["srtp"] is True
        assert stats["codec"] == "PCMU/8000"
        assert stats["packets_received"] >= 400
        # netem drops 5 % (binomial over ~500 packets: sd ~1 %)
        assert 2.0 <= stats["loss_percent"] <= 8.5, stats
        assert stats["jitter_ms"] >= 3.0  # 40 ms of netem jitter is seen (RFC 3550 A.8)
        assert stats["rtt_ms"] is not None  # one sample: anything from 0 to 120 ms here
        # the peer's RTCP saw our loss too (fraction of its last interval)
        assert stats["remote_loss_percent"] is not None
        assert stats["concealed_frames"] >= stats["packets_lost"] * 0.8
        assert stats["jitter_buffer_target_ms"] >= 30  # it grew for the jitter
    with WavFileSource(record) as wav:
        pcm = wav.read(wav.file_frames)
    assert len(pcm) / 8000 >= SECONDS - 1
    assert _longest_hole_ms(pcm, 8000) <= 60
    assert abs(dominant_frequency(pcm[8000:], 8000) - 1000) <= 10
