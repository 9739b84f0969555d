"""Many independent trainings past one machine: submitit's local and Slurm
executors behind one loop.

``run`` takes named jobs (picklable callables that write their own result
file; the caller leaves out those already done) and runs them:

- ``--launcher local``: submitit's local executor, at most ``--max-parallel``
  jobs at once, each given its own ``--gpus-per-job`` GPUs;
- ``--launcher slurm``: one Slurm array (``--slurm-partition``,
  ``--gpus-per-job``, ``--cpus-per-job``, ``--mem-gb``, ``--timeout-min``,
  ``%max-parallel``). A job whose time runs out or that is preempted is
  requeued by submitit (the job is a ``submitit.helpers.Checkpointable``) and
  resumes from its checkpoint.

As each job ends its result is collected (``collect(name)`` returns False when
the job wrote none: a failure, whose log path is printed). The Slurm ids are
kept in ``FOLDER/jobs.json``: a rerun waits for the jobs still queued or running
instead of submitting them twice, and resubmits the failed ones. Interrupted
(Ctrl-C, SIGTERM), the local jobs are stopped (a rerun resumes them from their
checkpoints) and Slurm's keep running.
"""

import argparse
import contextlib
import json
import os
import shutil
import signal
import sys
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

from .errors import MagicError
from .ranges import ranged
from .space import write_whole

LAUNCHERS = ("local", "slurm")
ALIVE = {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "SUSPENDED", "RESIZING", "REQUEUE_HOLD",
         "REQUEUE_FED"}  # Slurm states of a job that will still run: waited for, never submitted twice
SLURM_ONLY = ("slurm_partition", "cpus_per_job", "mem_gb")


@dataclass
class LaunchOptions:
    launcher: str = "local"
    max_parallel: Optional[int] = None  # local: 1; Slurm: the whole array at once
    slurm_partition: str = ""
    gpus_per_job: int = 0
    cpus_per_job: Optional[int] = None
    mem_gb: Optional[float] = None
    timeout_min: int = 24 * 60
    poll_s: Optional[float] = None  # how often the running jobs are checked: local 1 s, Slurm 30 s


def add_launch_options(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("launching (submitit)")
    g.add_argument("--launcher", default="local",
                   help="local: on this machine; slurm: one Slurm array job (requeued and resumed when preempted)")
    g.add_argument("--max-parallel", type=ranged(int, "[1, inf)"), default=None,
                   help="jobs running at once (local: default 1, on a CPU with OMP_NUM_THREADS=1 each; "
                        "Slurm: the array's %%limit, default none)")
    g.add_argument("--slurm-partition", default="", help="Slurm partition (sbatch --partition)")
    g.add_argument("--gpus-per-job", type=ranged(int, "[0, inf)"), default=0,
                   help="GPUs per job (local: each running job gets its own; with 0 the jobs see no GPU)")
    g.add_argument("--cpus-per-job", type=ranged(int, "[1, inf)"), default=None, help="Slurm: CPUs per job")
    g.add_argument("--mem-gb", type=ranged(float, "(0, inf)"), default=None, help="Slurm: memory per job, GB")
    g.add_argument("--timeout-min", type=ranged(int, "[1, inf)"), default=24 * 60,
                   help="a job's time limit in minutes; on Slurm a job that reaches it is requeued and resumes")


def launch_options(args: argparse.Namespace) -> LaunchOptions:
    """The checked options of ``add_launch_options``: one line for an unknown launcher, Slurm's options
    on the local launcher, or Slurm without ``sbatch``."""
    opts = LaunchOptions(**{k: getattr(args, k) for k in (
        "launcher", "max_parallel", "slurm_partition", "gpus_per_job", "cpus_per_job", "mem_gb", "timeout_min")})
    if opts.launcher not in LAUNCHERS:
        raise MagicError(f"unknown --launcher '{opts.launcher}' (known: {', '.join(LAUNCHERS)})")
    if opts.launcher == "local":
        given = [k for k in SLURM_ONLY if getattr(opts, k)]
        if given:
            raise MagicError(f"--{given[0].replace('_', '-')} is a Slurm option: add --launcher slurm")
        if opts.gpus_per_job:
            import torch

            need, have = (opts.max_parallel or 1) * opts.gpus_per_job, torch.cuda.device_count()
            if need > have:
                raise MagicError(f"--max-parallel {opts.max_parallel or 1} x --gpus-per-job {opts.gpus_per_job} "
                                 f"needs {need} GPUs here, and this machine has {have}")
    elif shutil.which("sbatch") is None or shutil.which("srun") is None:
        raise MagicError("--launcher slurm needs Slurm, and sbatch is not on this machine's PATH; "
                         "run the jobs here with --launcher local")
    return opts


def _executor(opts: LaunchOptions, folder: str, name: str):
    import submitit

    if opts.launcher == "local":
        executor = submitit.LocalExecutor(folder=folder)
        executor.update_parameters(timeout_min=opts.timeout_min, gpus_per_node=opts.gpus_per_job, name=name)
        return executor
    executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=100)  # a long training: requeued again and again
    params = dict(time=opts.timeout_min, gpus_per_node=opts.gpus_per_job or None, nodes=1, ntasks_per_node=1,
                  job_name=name, partition=opts.slurm_partition or None, cpus_per_task=opts.cpus_per_job,
                  mem=f"{opts.mem_gb:g}GB" if opts.mem_gb else None, array_parallelism=opts.max_parallel or 256)
    executor.update_parameters(**{k: v for k, v in params.items() if v is not None})
    return executor


def write_json(path: str, obj, indent: Optional[int] = None) -> None:
    """``obj`` as JSON at ``path``, whole or not at all (a temporary file renamed into place): a job's
    result is read as soon as it appears, and a driver stopped mid-write leaves the previous file."""
    try:
        text = json.dumps(obj, indent=indent, allow_nan=False)  # NaN and infinity are not JSON
    except ValueError as err:
        raise MagicError(f"{path}: {err}") from None
    write_whole(path, text)


def _last_line(path) -> str:
    try:
        with open(path, errors="replace") as f:
            lines = [line.strip() for line in f if line.strip()]
    except OSError:
        return "no log"
    return lines[-1] if lines else "empty log"


class _Registry:
    """``FOLDER/jobs.json``: {job name: Slurm job id} of the jobs submitted from this folder."""

    def __init__(self, folder: str):
        self.path = os.path.join(folder, "jobs.json")
        self.ids: Dict[str, str] = {}
        if os.path.isfile(self.path):
            with open(self.path) as f:
                self.ids = json.load(f)

    def save(self) -> None:
        write_json(self.path, self.ids, indent=1)


def run(jobs: Dict[str, Callable[[], None]], opts: LaunchOptions, folder: str, collect: Callable[[str], bool],
        log=print, progress=None, title: str = "fairseq-magic") -> List[str]:
    """Run every job of ``jobs`` ({name: picklable callable}); ``collect(name)`` as each ends. Returns the
    names of the failed ones, each logged with its log file and that log's last line. ``title``: the jobs'
    name in Slurm's queue."""
    import submitit

    os.makedirs(folder, exist_ok=True)
    executor = _executor(opts, folder, title)
    registry = _Registry(folder)
    running: Dict[str, "submitit.Job"] = {}
    if opts.launcher == "slurm":
        for name in jobs:  # still queued or running from an earlier call: waited for, not submitted again
            if name in registry.ids:
                job = submitit.SlurmJob(folder=folder, job_id=registry.ids[name])
                if job.state in ALIVE:
                    running[name] = job
                    log(f"{name}: Slurm job {job.job_id} is still {job.state.lower()}; waiting for it")
    waiting = deque(name for name in jobs if name not in running)
    failed: List[str] = []
    if progress is not None:
        progress.reset(total=len(jobs))

    if opts.launcher == "slurm" and waiting:
        with executor.batch():
            submitted = {name: executor.submit(jobs[name]) for name in waiting}
        waiting.clear()
        for name, job in submitted.items():
            registry.ids[name] = job.job_id
        registry.save()
        running.update(submitted)
        array = next(iter(submitted.values())).job_id.split("_")[0]
        log(f"submitted {len(submitted)} jobs to Slurm as array {array}; logs in {folder}")
    slots = deque(range(opts.max_parallel or 1))  # local: the free places, each with its own GPUs
    place: Dict[str, int] = {}

    def end(name: str, job) -> None:
        if not collect(name):
            failed.append(name)
            log(f"{name}: FAILED ({_last_line(job.paths.stderr)}); log: {job.paths.stderr}")
        if progress is not None:
            progress.update()

    stop = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        while waiting or running:
            while waiting and slots and opts.launcher == "local":
                name, slot = waiting.popleft(), slots.popleft()
                gpus = opts.gpus_per_job
                executor.update_parameters(visible_gpus=list(range(slot * gpus, (slot + 1) * gpus)))
                with _stderr_to(os.path.join(folder, "local-controllers.log")):
                    running[name], place[name] = executor.submit(jobs[name]), slot
                log(f"{name}: started (local job {running[name].job_id})")
            for name, job in list(running.items()):
                if job.done():
                    del running[name]
                    if name in place:
                        slots.append(place.pop(name))
                    end(name, job)
            if running:
                time.sleep(opts.poll_s or (1 if opts.launcher == "local" else 30))
    except KeyboardInterrupt:
        if opts.launcher == "local":
            for job in running.values():
                job.cancel()
            raise MagicError(f"interrupted: {len(running)} running jobs stopped; run the same command again "
                             f"to resume them from their checkpoints") from None
        raise MagicError(f"interrupted: {len(running)} Slurm jobs keep running; run the same command again "
                         f"to collect them") from None
    finally:
        signal.signal(signal.SIGTERM, stop)
    return failed


@contextlib.contextmanager
def _stderr_to(path: str):
    """Standard error redirected to ``path`` while a local job starts: submitit's local controller
    inherits it, and prints a traceback there when the job is stopped (the job's own log is its own)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(path, "a") as f:
        os.dup2(f.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _interrupt(signum, frame):
    raise KeyboardInterrupt
