"""The benchmark scripts run (at a size whose figures mean nothing): they cannot rot unnoticed."""

import os
import subprocess
import sys

import pytest

from conftest import ROOT


@pytest.mark.parametrize(
    "script,expected",
    [
        ("spos_step.py", ["step ratio supernet/roberta:", "memory: super-net - plain"]),
        ("magic_step.py", ["MAGIC-T / SPOS:", "MAGIC-AT / SPOS:", "sampler draw per update (ms)"]),
        ("search_speed.py", ["ratio scoring/plain", "shared/per-child: uniform"]),
        ("tangle_step.py", ["bert: tangle/child step", "kinds: tangle/child step"]),
    ],
)
def test_benchmark_runs(script, expected):
    env = dict(os.environ, MAGIC_BENCH_LINES="2000")
    cmd = [sys.executable, str(ROOT / "benchmarks" / script), "--size", "tiny", "--steps", "2", "--warmup", "1"]
    if script == "search_speed.py":
        cmd += ["--children", "3", "--sentences", "16"]
    proc = subprocess.run(cmd, cwd=str(ROOT), capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert all(line in proc.stdout for line in expected), proc.stdout
