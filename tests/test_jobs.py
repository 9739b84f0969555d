"""Jobs past one machine (fairseq_magic/jobs.py): the ground truth's trainings through submitit's
local executor (a kill, a resume, a failure), and the Slurm array it submits (submitit's mocked Slurm)."""

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from submitit import SlurmJob
from submitit.core.test_core import MockedSubprocess

from conftest import ROOT, assert_one_error_line, magic
from fairseq_magic import jobs
from fairseq_magic.errors import MagicError

BUDGET = "--batch-size 8 --tokens-per-sample 32 --optimizer adam --lr 1e-3 --cpu --num-workers 0 --log-format simple"


def test_a_killed_rank_train_resumes_from_its_checkpoints(supernet, data_bin, tmp_path):
    children = tmp_path / "children"
    magic("rank", "sample", "--checkpoint", supernet, "--out", str(children), "--children", "1", "--seed", "3")
    cmd = [sys.executable, "-m", "fairseq_magic.cli", "rank", "train", "--dir", str(children), "--data", data_bin,
           "--train-args", f"--max-update 300 --save-interval-updates 10 {BUDGET}"]
    driver = subprocess.Popen(cmd, cwd=str(ROOT), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    last = children / "train" / "child000" / "seed1" / "checkpoint_last.pt"
    deadline = time.time() + 120
    while not last.exists() and time.time() < deadline and driver.poll() is None:
        time.sleep(0.2)
    driver.send_signal(signal.SIGTERM)  # what a scheduler or `kill` sends
    out, err = driver.communicate(timeout=60)
    assert driver.returncode == 1 and err.strip().splitlines()[-1] == (
        "fairseq-magic: error: interrupted: 1 running jobs stopped; run the same command again to resume them "
        "from their checkpoints"), err[-2000:]
    controller = int(re.search(r"started \(local job (\d+)\)", out).group(1))
    for _ in range(50):  # the training stops with the driver: nothing keeps writing the checkpoints
        try:
            os.kill(controller, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail("the local job outlived its driver")
    assert not (children / "truth.json").exists()

    again = magic("rank", "train", "--dir", str(children), "--data", data_bin,
                  "--train-args", f"--max-update 300 --save-interval-updates 10 {BUDGET}")
    rerun = int(re.search(r"started \(local job (\d+)\)", again.stdout).group(1))
    log = (children / "jobs" / f"{rerun}_0_log.out").read_text()
    resumed = re.search(r"Loaded checkpoint \S+checkpoint_last\.pt \(epoch \d+ @ (\d+) updates\)", log)
    assert resumed and int(resumed.group(1)) >= 10, log[-2000:]  # resumed, not restarted
    truth = json.loads((children / "truth.json").read_text())
    assert list(truth["child000"]["valid_loss_by_seed"]) == ["1"]


def test_a_failed_training_names_its_log_and_is_retried(supernet, data_bin, tmp_path):
    children = tmp_path / "children"
    magic("rank", "sample", "--checkpoint", supernet, "--out", str(children), "--children", "1", "--seed", "4")
    args = ["rank", "train", "--dir", str(children), "--data", data_bin]
    proc = magic(*args, "--train-args", f"--max-update 2 --no-such-option {BUDGET}", check=False)
    assert_one_error_line(proc, "1 of 1 trainings failed (child000.seed1; their logs are named above); run the "
                                "same command again to retry them")
    failed = re.findall(r"child000\.seed1: FAILED \((.*)\); log: (\S+)", proc.stdout)
    assert failed and "unrecognized arguments: --no-such-option" in failed[0][0], proc.stdout
    assert os.path.isfile(failed[0][1])
    magic(*args, "--train-args", f"--max-update 2 {BUDGET}")
    assert list(json.loads((children / "truth.json").read_text())) == ["child000"]


def options(*argv: str) -> jobs.LaunchOptions:
    parser = argparse.ArgumentParser()
    jobs.add_launch_options(parser)
    return jobs.launch_options(parser.parse_args(argv))


class Train:  # a picklable job; the mocked Slurm never runs it
    def __call__(self):
        pass


def test_slurm_array_script_and_rerun(tmp_path, monkeypatch):
    slurm = MockedSubprocess(known_cmds=["srun", "sbatch"])
    monkeypatch.setattr(SlurmJob, "watcher", type(SlurmJob.watcher)(delay_s=0))  # sacct read afresh each time
    with slurm.context():
        opts = options("--launcher", "slurm", "--slurm-partition", "learnlab", "--gpus-per-job", "2",
                       "--cpus-per-job", "10", "--mem-gb", "64", "--max-parallel", "3", "--timeout-min", "600")
        opts.poll_s = 0.01
        lines = []
        real_sbatch = slurm.sbatch

        def sbatch(args):  # submitted, then at once ended (with any job waited for)
            out = real_sbatch(args)
            for job in slurm.job_sacct:
                slurm.job_sacct[job] = slurm.job_sacct[job].replace("RUNNING", "COMPLETED").replace("PENDING", "COMPLETED")
            return out

        slurm.sbatch = sbatch
        names = ["child000.seed1", "child001.seed1", "child002.seed1", "child003.seed1"]
        failed = jobs.run({n: Train() for n in names}, opts, str(tmp_path), collect=lambda n: n != "child002.seed1",
                          log=lines.append)
        assert failed == ["child002.seed1"]
        assert any(line.startswith("child002.seed1: FAILED (") for line in lines)
        array = json.loads((tmp_path / "jobs.json").read_text())
        assert array == {n: f"12_{i}" for i, n in enumerate(names)}  # one array, one task per (child, seed)
        script = (tmp_path / "12_submission.sh").read_text()
        for line in ("#SBATCH --partition=learnlab", "#SBATCH --gpus-per-node=2", "#SBATCH --cpus-per-task=10",
                     "#SBATCH --mem=64GB", "#SBATCH --array=0-3%3", "#SBATCH --time=600", "#SBATCH --signal=USR2@90",
                     "#SBATCH --open-mode=append"):
            assert line in script, script
        assert "#SBATCH --job-name=fairseq-magic" in script

        # a rerun: the job still queued is waited for, not submitted twice; the failed one is resubmitted
        slurm.job_sacct["12"] = slurm.job_sacct["12"].replace("12_1|COMPLETED", "12_1|PENDING")
        lines.clear()
        failed = jobs.run({n: Train() for n in ("child001.seed1", "child002.seed1")}, opts, str(tmp_path),
                          collect=lambda n: True, log=lines.append)
        assert failed == [] and "child001.seed1: Slurm job 12_1 is still pending; waiting for it" in lines
        assert json.loads((tmp_path / "jobs.json").read_text())["child002.seed1"] == "13"  # one job: no array


@pytest.mark.parametrize("argv, message", [
    (["--launcher", "kubernetes"], "unknown --launcher 'kubernetes' (known: local, slurm)"),
    (["--slurm-partition", "dev"], "--slurm-partition is a Slurm option: add --launcher slurm"),
    (["--gpus-per-job", "1", "--max-parallel", "64"], "--max-parallel 64 x --gpus-per-job 1 needs 64 GPUs here"),
    (["--launcher", "slurm"], "--launcher slurm needs Slurm, and sbatch is not on this machine's PATH; "
                              "run the jobs here with --launcher local"),
])
def test_bad_launch_options_are_one_message(argv, message):
    with pytest.raises(MagicError, match=re.escape(message)):
        options(*argv)


def test_bad_launch_options_are_one_line_before_anything_runs(tmp_path):
    proc = magic("rank", "train", "--dir", str(tmp_path), "--data", str(tmp_path), "--train-args=--cpu",
                 "--launcher", "slurm", check=False)
    assert_one_error_line(proc, "--launcher slurm needs Slurm")
    assert os.listdir(tmp_path) == []  # (--max-parallel 0: tests/test_ranges.py)


def test_a_preempted_training_is_requeued_as_itself(tmp_path):
    """Slurm's preemption or time-out signal makes submitit call ``checkpoint``: the same (child, seed)
    is submitted again, and fairseq resumes it from its checkpoint_last.pt."""
    from fairseq_magic.analysis.ground_truth import ChildTraining

    job = ChildTraining(str(tmp_path), "child007", 2, "data-bin", ["--max-update", "9"])
    again = job.checkpoint()
    assert again.function is job and again.args == () and again.kwargs == {}
    assert job.result_path() == str(tmp_path / "results" / "child007.seed2.json")


def test_a_result_without_what_the_job_measures_is_not_collected(tmp_path, monkeypatch):
    """Pre-trained earlier, fine-tuned now: the pre-training's result file does not count as the
    fine-tuning job's; the job is handed to the launcher, and its own result is collected."""
    from fairseq_magic.analysis import ground_truth
    from fairseq_magic.analysis.rank_correlation import write_children
    from fairseq_magic.space import SearchSpace

    write_children(SearchSpace.build(2, "MHA2,FFN", hidden_dim=32, ffn_dim=64), [(0, 1)], str(tmp_path))
    (tmp_path / "truth.json").write_text(json.dumps({"child000": {"valid_loss": 7.0, "valid_loss_by_seed": {"1": 7.0}}}))
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "child000.seed1.json").write_text(json.dumps({"valid_loss": 7.0}))
    handed = []

    def run(todo, opts, folder, collect, log, progress, title):
        handed.extend(todo)
        assert not todo["child000.seed1"].pretrain and todo["child000.seed1"].metrics() == {"finetune_accuracy"}
        (tmp_path / "results" / "child000.seed1.json").write_text(json.dumps({"finetune_accuracy": 75.0}))
        return [name for name in todo if not collect(name)]

    monkeypatch.setattr(ground_truth.jobs, "run", run)
    truth = ground_truth.train_children(str(tmp_path), "mlm-bin", [], "glue-bin", ["--num-classes", "2"], log=print)
    assert handed == ["child000.seed1"]
    assert truth["child000"]["valid_loss"] == 7.0 and truth["child000"]["finetune_accuracy"] == 75.0
