"""Smoke run of ``benchmarks/sipp_uas.py`` (SIPp load against p2psip uas and SIPp's uas)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.interop

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "sipp_uas.py"


def test_sipp_uas_benchmark_quick(require_binary, tmp_path):
    require_binary("sipp")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, str(SCRIPT), "--quick", "--seconds", "2", "--max-probes", "2"]
    argv += ["--workdir", str(tmp_path / "bench")]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=90, env=env, cwd=ROOT)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    lines = proc.stdout.strip().splitlines()
    assert lines, output
    # the ratio is the last line, and both servers sustained at least the first rate
    assert re.fullmatch(r"ratio p2psip/sipp: \d+\.\d\d", lines[-1]), output
    assert re.search(r"^SIPp -sn uas: best sustained \d+ cps", proc.stdout, re.M), output
    assert re.search(r"^p2psip uas \(.*\): best sustained \d+ cps", proc.stdout, re.M), output
