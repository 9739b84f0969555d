"""The benchmark scripts run (at a size whose figures mean nothing): they cannot rot unnoticed."""

import os
import subprocess
import sys

import pytest

from conftest import ROOT


def test_front_door_runs():
    """The attack script (one kill, no payload here: tests/test_bad_input.py plants them)."""
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "front_door.py"), "--kills", "1", "--payloads", ""],
                          cwd=str(ROOT), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "| SIGKILL while training and saving every update | 1 kills (" in proc.stdout, proc.stdout
    assert "| 0 left an unreadable checkpoint; 0 resumes went back |" in proc.stdout, proc.stdout


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


def test_gpu_check_dry_run(tmp_path):
    """The prepared GPU check, at tiny size on the CPU: every model trains, the table is written."""
    env = dict(os.environ, MAGIC_BENCH_LINES="2000")
    out = tmp_path / "gpu_check.md"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--dry-run", "--out", str(out)],
                          cwd=str(tmp_path), capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    table = out.read_text()
    assert table.startswith("GPU check on CPU")
    for model in ("roberta_base", "SPOS", "MAGIC-T", "MAGIC-AT"):
        assert f"| fp32 | {model} |" in table
    assert "| uniform |" in table and "| evolution generation |" in table and "FAILED" not in table
